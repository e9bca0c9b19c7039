{
  "variables": {
    # 1 for the ASan+UBSan build (node scripts/build-native.js --sanitize, into build/sanitize/).
    "dmkit_sanitize%": 0,
    # 1 when Debian's liburing-dev is installed: the copy engine links liburing statically (nothing
    # needed at run time) and uses io_uring where the kernel allows it, its thread pool otherwise.
    "dmkit_liburing%": "<!(test -f /usr/include/liburing.h && test -f /usr/lib/x86_64-linux-gnu/liburing.a && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "dmkit",
      "sources": [
        "native/addon.cc",
        "native/copy.cc",
        "native/dm_ioctl.cc",
        "native/replay.cc",
        "native/sys.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror=return-type"],
      "conditions": [
        ["dmkit_liburing==1", {
          "defines": ["DMKIT_HAVE_LIBURING"],
          "libraries": ["/usr/lib/x86_64-linux-gnu/liburing.a"]
        }],
        ["dmkit_sanitize==1", {
          "cflags_cc": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g", "-O1"],
          "ldflags": ["-fsanitize=address,undefined"]
        }]
      ]
    }
  ]
}
