// libtorch's CPU allocator, routed to shared memory in an out-of-process
// worker: large allocations (a model's outputs among them) come from the
// core's shared heap, so an output reaches the caller where libtorch wrote
// it instead of being copied. Smaller ones, and any the heap cannot serve,
// go to libtorch's default allocator.
#include <c10/core/CPUAllocator.h>

#include <cstddef>

extern "C" {
typedef void* (*npt_shared_allocate)(void* ctx, size_t len);
typedef void (*npt_shared_release)(void* ctx, void* ptr);
}

namespace {

struct SharedHeap {
  void* ctx;
  npt_shared_allocate allocate;
  npt_shared_release release;
  size_t min_bytes;
};

// One per process, like libtorch's allocator setting; set once, never freed
// (tensors allocated through it may outlive everything else).
const SharedHeap* heap = nullptr;

void release_shared(void* ptr) { heap->release(heap->ctx, ptr); }

class SharedMemoryAllocator final : public c10::Allocator {
 public:
  explicit SharedMemoryAllocator(c10::Allocator* fallback) : fallback_(fallback) {}

  c10::DataPtr allocate(size_t n) override {
    if (n >= heap->min_bytes) {
      if (void* ptr = heap->allocate(heap->ctx, n)) {
        return {ptr, ptr, &release_shared, c10::Device(c10::DeviceType::CPU)};
      }
    }
    return fallback_->allocate(n);
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  c10::Allocator* fallback_;
};

}  // namespace

extern "C" {

// Routes libtorch's CPU allocations of at least `min_bytes` to the heap.
// Only the first call has an effect.
void npt_use_shared_allocator(void* ctx, npt_shared_allocate allocate, npt_shared_release release,
                              size_t min_bytes) {
  if (heap != nullptr) {
    return;
  }
  heap = new SharedHeap{ctx, allocate, release, min_bytes};
  static SharedMemoryAllocator allocator(c10::GetDefaultCPUAllocator());
  // Above the default's priority (0), so nothing registered later by
  // default replaces it.
  c10::SetCPUAllocator(&allocator, 100);
}

}  // extern "C"
