// dmkit native addon: the system calls Node lacks that device-mapper userspace needs.
#pragma once

#include <napi.h>

namespace dmkit {

// Adds sysMknod, the SysV semaphore calls (semCreate, semSetValue, semGetValue, semAdd, semWaitZero,
// semRemove) and the event-wait calls (eventfdOpen, eventfdSignal, pollReadable) to the exports.
void RegisterSys(Napi::Env env, Napi::Object exports);

}  // namespace dmkit
