// dmkit native addon: device-mapper control device and ioctl transport.
#pragma once

#include <napi.h>

namespace dmkit {

// Adds dmControlOpen, dmControlClose and dmIoctl to the module exports.
void RegisterDmIoctl(Napi::Env env, Napi::Object exports);

}  // namespace dmkit
