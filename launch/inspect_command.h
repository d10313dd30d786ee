// `peftrun inspect DIR`: what a checkpoint folder (or a plain PEFT adapter folder) holds: the
// step and how the batch was split, a config summary, every tensor with dtype and shape, and
// AdaLoRA's rank per module. Reads headers only, never tensor data.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace peftrun {

// args: what follows `inspect` on the command line (exactly one DIR). Returns the exit code:
// 0; 1 when DIR is not a checkpoint or adapter folder, or one of its files is damaged (the
// message on `err` names the file); 2 on a bad command line.
int run_inspect_command(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace peftrun
