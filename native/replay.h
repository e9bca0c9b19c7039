// dmkit native addon: dm-log-writes log index and crash-state image replay (the crash and fault lab).
#pragma once

#include <napi.h>

namespace dmkit {

// Adds logIndex, replayImage and imageDigest to the exports.
void RegisterReplay(Napi::Env env, Napi::Object exports);

}  // namespace dmkit
