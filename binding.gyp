{
  "targets": [
    {
      "target_name": "dmkit",
      "sources": [
        "native/addon.cc",
        "native/dm_ioctl.cc",
        "native/replay.cc",
        "native/sys.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror=return-type"]
    }
  ]
}
