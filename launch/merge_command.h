// `peftrun merge CONFIG.yaml --adapter DIR --out DIR [--dtype fp16|bf16] [--force]
//                [--max-shard-size SIZE] [--set key.path=value ...]`:
// argv -> validated Config + MergeOptions -> runtime/model/merge.h. One process only.
#pragma once

namespace peftrun {

// argv[0] is "merge". Returns the exit code: 0 written, 1 runtime failure (a mismatched adapter,
// an unreadable checkpoint, a value that overflows the output dtype), 2 bad command line or
// config, or an --out that may not be replaced (nothing was written in either case).
int run_merge_command(int argc, char** argv);

}  // namespace peftrun
