# Finds what the CUDA backends need.
#   FILO_HAVE_CUDA     the real backend: nvcc, cudart, cuBLASLt, cuDNN and NCCL were found
#   FILO_HAVE_CUDA_EMU the emulated backend for tests: the CUDA headers were found
include(CheckLanguage)

set(FILO_HAVE_CUDA OFF)
set(FILO_HAVE_CUDA_EMU OFF)
if(NOT FILO_CUDA STREQUAL "OFF" OR NOT FILO_CUDA_EMULATION STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
endif()

if(NOT FILO_CUDA STREQUAL "OFF")
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  check_language(CUDA)
  find_library(FILO_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
  # NCCL: the device collectives of filo_comm (runtime/cuda_nccl.c).
  find_library(FILO_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  find_path(FILO_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND AND TARGET CUDA::cublasLt AND FILO_CUDNN_LIBRARY AND FILO_NCCL_LIBRARY
     AND FILO_NCCL_INCLUDE_DIR)
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    # Every kernel's register and spill report goes next to its object file for tests/ptxas-check.
    set(CMAKE_CUDA_COMPILER_LAUNCHER ${CMAKE_CURRENT_SOURCE_DIR}/scripts/nvcc-log)
    set(CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS} -Xptxas=-v -Xcompiler=-Wall,-Wextra -Werror=all-warnings")
    set(FILO_HAVE_CUDA ON)
    message(STATUS "filo: CUDA backend ON (${CMAKE_CUDA_COMPILER}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
  elseif(FILO_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FILO_CUDA=ON but nvcc, cudart, cuBLASLt, cuDNN or NCCL was not found")
  else()
    message(STATUS "filo: CUDA backend OFF (nvcc, cuBLASLt, cuDNN or NCCL not found)")
  endif()
endif()

if(NOT FILO_CUDA_EMULATION STREQUAL "OFF")
  if(CUDAToolkit_FOUND AND EXISTS "${CUDAToolkit_INCLUDE_DIRS}/cuda_runtime_api.h")
    set(FILO_HAVE_CUDA_EMU ON)
    message(STATUS "filo: emulated CUDA backend for tests ON")
  elseif(FILO_CUDA_EMULATION STREQUAL "ON")
    message(FATAL_ERROR "FILO_CUDA_EMULATION=ON but the CUDA headers were not found")
  endif()
endif()
