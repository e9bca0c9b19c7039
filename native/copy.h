// dmkit native addon: the range copy engine (era backup and restore).
#pragma once

#include <napi.h>

namespace dmkit {

// Adds copyRanges, crc32c and copyEngine to the exports.
void RegisterCopy(Napi::Env env, Napi::Object exports);

}  // namespace dmkit
