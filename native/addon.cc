// dmkit native addon: entry point. Each area registers its functions here.
#include <napi.h>

#include "copy.h"
#include "dm_ioctl.h"
#include "replay.h"
#include "sys.h"

namespace {

Napi::Value AddonVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), "0.1.0");
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("addonVersion", Napi::Function::New(env, AddonVersion));
  dmkit::RegisterDmIoctl(env, exports);
  dmkit::RegisterSys(env, exports);
  dmkit::RegisterReplay(env, exports);
  dmkit::RegisterCopy(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(dmkit, Init)
