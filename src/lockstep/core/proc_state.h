// The state letter of a process as /proc/PID/stat shows it ('R', 'S', 'T' stopped, 't'
// traced, 'Z' zombie, 'X' dead, ...), or 0 when there is no such process to read.
#pragma once

#include <sys/types.h>

namespace lockstep {

char proc_state(pid_t pid);

}  // namespace lockstep
