// The emulator's kernel launch counter (emu.h's launch() adds one per kernel launch), in a header
// of its own so that a driver can read it without emu.h's macros.
#pragma once

namespace emu {
inline long launches = 0;
}  // namespace emu
