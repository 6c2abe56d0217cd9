# Source after gpu_env.sh on the device machine: flash-attention 4 and NVIDIA's CuTe DSL from carried wheels.
# The DSL's CUDA-12 library wheel (92 MB) is over one call's 64 MiB, so it travels in two calls of a warm machine:
# call 1 carries .fa4a (its MLIR compiler library, xz), call 2 carries .fa4b (the runtime library, xz, the
# rest of that wheel as a tar, and the other wheels: nvidia-cutlass-dsl, -libs-base, -libs-core, flash-attn-4, quack-kernels,
# apache-tvm-ffi, torch-c-dlpack-ext). What call 1 unpacked stays on the machine (/tmp).
# The target's path must contain "site-packages": quack fingerprints GEMM epilogue functions and treats code under
# site-packages as pinned; elsewhere it walks into the CuTe DSL's globals and fails (TypeError on a ContextVar).
S=/tmp/fa4/site-packages
IR=/tmp/fa4_cutlass_ir.so
unxz() { python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$1" "$2"; }
if [ -f .fa4a/ir.xz ] && [ ! -f $IR ]; then unxz .fa4a/ir.xz $IR.part && mv $IR.part $IR; fi
if [ -d .fa4b ] && [ -f $IR ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target $S .fa4b/*.whl 2>&1 | grep -v "already exists" || true
  tar xf .fa4b/libs_cu12_rest.tar -C $S
  unxz .fa4b/rt.xz $S/nvidia_cutlass_dsl/cu12/lib/libcute_dsl_runtime.so
  cp $IR $S/nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu12.cpython-312-x86_64-linux-gnu.so
fi
# pip --target skips the wheel's .pth, which puts dsl_packages on sys.path
export PYTHONPATH=$S/nvidia_cutlass_dsl/dsl_packages:$S:$PYTHONPATH
export FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1 FLASH_ATTENTION_CUTE_DSL_CACHE_DIR=/tmp/fa4_cache
python3 -c "import flash_attn.cute, cutlass; print('flash_attn.cute', flash_attn.cute.__version__, 'cutlass dsl ok')" || echo "flash_attn.cute: not importable"
