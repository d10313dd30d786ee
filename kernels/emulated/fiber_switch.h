// Switching between the fibers of the block emulator (block_emulator.h) and its scheduler.
//
// On x86-64 a switch saves the callee-saved registers and the SSE/x87 control words on the
// running stack and loads another stack pointer: a few nanoseconds. glibc's swapcontext, the
// portable fallback used elsewhere, also saves and restores the signal mask with a system call
// on every switch, which made context switching ~70% of an emulated training step's time.
//
// Contract: fiber_prepare(ctx, stack, bytes, entry) makes the first fiber_switch(..., ctx) run
// entry() on that stack; entry must never return (it ends by switching away for good).
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace peftrun::emu {

#if defined(__x86_64__)

struct FiberContext {
  void* sp = nullptr;  // the saved stack pointer; the registers sit on that stack
};

// Saves the running context's registers on its stack and its stack pointer in *save_sp, then
// resumes the context whose stack pointer is load_sp (System V: rdi, rsi; returns there).
[[gnu::naked, gnu::noinline]] inline void fiber_switch_stacks(void** /*save_sp*/,
                                                              void* /*load_sp*/) {
  asm("pushq %rbp\n\t"
      "pushq %rbx\n\t"
      "pushq %r12\n\t"
      "pushq %r13\n\t"
      "pushq %r14\n\t"
      "pushq %r15\n\t"
      "subq $8, %rsp\n\t"
      "stmxcsr (%rsp)\n\t"
      "fnstcw 4(%rsp)\n\t"
      "movq %rsp, (%rdi)\n\t"
      "movq %rsi, %rsp\n\t"
      "ldmxcsr (%rsp)\n\t"
      "fldcw 4(%rsp)\n\t"
      "addq $8, %rsp\n\t"
      "popq %r15\n\t"
      "popq %r14\n\t"
      "popq %r13\n\t"
      "popq %r12\n\t"
      "popq %rbx\n\t"
      "popq %rbp\n\t"
      "ret\n\t");
}

inline void fiber_prepare(FiberContext& ctx, char* stack, std::size_t bytes, void (*entry)()) {
  // The frame fiber_switch_stacks pops, from the lowest address up: the control words, r15,
  // r14, r13, r12, rbx, rbp, the address it returns to (entry), and a null return address for
  // entry itself, placed so that entry starts with rsp = 8 (mod 16) as after a call.
  auto top = reinterpret_cast<std::uintptr_t>(stack + bytes) & ~std::uintptr_t(15);
  auto* slot = reinterpret_cast<std::uint64_t*>(top);
  std::uint32_t mxcsr = 0;
  std::uint16_t fpcw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  slot[-1] = 0;
  slot[-2] = reinterpret_cast<std::uint64_t>(entry);
  for (int i = 3; i <= 8; ++i) slot[-i] = 0;  // rbp, rbx, r12 .. r15
  slot[-9] = std::uint64_t(mxcsr) | std::uint64_t(fpcw) << 32;
  ctx.sp = &slot[-9];
}

inline void fiber_switch(FiberContext& from, FiberContext& to) {
  fiber_switch_stacks(&from.sp, to.sp);
}

#else  // portable: ucontext

struct FiberContext {
  ucontext_t context{};
};

inline void fiber_prepare(FiberContext& ctx, char* stack, std::size_t bytes, void (*entry)()) {
  getcontext(&ctx.context);
  ctx.context.uc_stack.ss_sp = stack;
  ctx.context.uc_stack.ss_size = bytes;
  ctx.context.uc_link = nullptr;  // entry never returns
  makecontext(&ctx.context, entry, 0);
}

inline void fiber_switch(FiberContext& from, FiberContext& to) {
  swapcontext(&from.context, &to.context);
}

#endif

}  // namespace peftrun::emu
