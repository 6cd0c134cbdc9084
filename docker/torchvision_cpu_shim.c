/*
 * Stand-ins for the CUDA parts of torch that PyPI's torchvision links against, so that this torchvision
 * loads beside a CPU-only torch build (see scripts/make_wheelhouse.sh and docs/deploy.md).
 *
 * PyPI's Linux torchvision wheels are built against torch's CUDA build: their _C.so and image.so name
 * libc10_cuda.so and libtorch_cuda.so, which a CPU torch does not ship. Without them torchvision's C
 * extension fails to load, and `import torchvision` (hence `import timm`) stops with
 * "operator torchvision::nms does not exist". A CPU torch cannot create CUDA tensors, so torchvision's CUDA
 * kernels are registered but never dispatched to; the symbols below only have to exist. Every one of them
 * stops the process with a message if it is ever called: a silent wrong answer is never possible.
 *
 * The symbol list is the set of undefined c10::cuda / at::cuda symbols of torchvision 0.28.0's _C.so and
 * image.so that torch-2.13.0+cpu does not define (`nm -D --undefined-only`); the CUDA runtime itself comes
 * from the libcudart that the torchvision wheel bundles. scripts/make_wheelhouse.sh checks the result by
 * importing torchvision and timm and running torchvision's CPU kernels (nms, decode_jpeg).
 */
#include <stdio.h>
#include <stdlib.h>

static void cpu_only(const char *name) {
    fprintf(stderr, "torchvision CPU shim: %s was called, but this is a CPU-only build of torch\n", name);
    abort();
}

#define CPU_ONLY(id, mangled, readable) \
    void id(void) __asm__(mangled);     \
    void id(void) { cpu_only(readable); }

CPU_ONLY(s01, "_ZN2at4cuda26getCurrentDevicePropertiesEv", "at::cuda::getCurrentDeviceProperties")
CPU_ONLY(s02, "_ZN3c104cuda12device_countEv", "c10::cuda::device_count")
CPU_ONLY(s03, "_ZN3c104cuda14ExchangeDeviceEa", "c10::cuda::ExchangeDevice")
CPU_ONLY(s04, "_ZN3c104cuda14MaybeSetDeviceEa", "c10::cuda::MaybeSetDevice")
CPU_ONLY(s05, "_ZN3c104cuda14current_deviceEv", "c10::cuda::current_device")
CPU_ONLY(s06, "_ZN3c104cuda17getStreamFromPoolEba", "c10::cuda::getStreamFromPool(bool)")
CPU_ONLY(s07, "_ZN3c104cuda17getStreamFromPoolEia", "c10::cuda::getStreamFromPool(int)")
CPU_ONLY(s08, "_ZN3c104cuda20getCurrentCUDAStreamEa", "c10::cuda::getCurrentCUDAStream")
CPU_ONLY(s09, "_ZN3c104cuda20getDefaultCUDAStreamEa", "c10::cuda::getDefaultCUDAStream")
CPU_ONLY(s10, "_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE", "c10::cuda::setCurrentCUDAStream")
CPU_ONLY(s11, "_ZN3c104cuda29c10_cuda_check_implementationEiPKcS2_jb", "c10::cuda::c10_cuda_check_implementation")
CPU_ONLY(s12, "_ZN3c104cuda9GetDeviceEPa", "c10::cuda::GetDevice")
CPU_ONLY(s13, "_ZN3c104cuda9SetDeviceEab", "c10::cuda::SetDevice")
CPU_ONLY(s14, "_ZNK3c104cuda10CUDAStream11synchronizeEv", "c10::cuda::CUDAStream::synchronize")
CPU_ONLY(s15, "_ZNK3c104cuda10CUDAStream5queryEv", "c10::cuda::CUDAStream::query")
CPU_ONLY(s16, "_ZNK3c104cuda10CUDAStream6streamEv", "c10::cuda::CUDAStream::stream")

/* c10::cuda::CUDACachingAllocator::allocator, a std::atomic<CUDAAllocator*>: no allocator on a CPU build. */
void *cuda_caching_allocator __asm__("_ZN3c104cuda20CUDACachingAllocator9allocatorE") = NULL;
