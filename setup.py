"""Build of the INADE package and its extension ``inade._C``.

The C++ (CPU) sources under ``csrc/cpu`` are always built. CUDA sources under
``csrc/cuda`` are added only where both a CUDA toolkit and a CUDA build of
torch are present, so a CPU machine never needs (or pulls) CUDA.
Set ``INADE_NO_EXTENSION=1`` to install the pure-Python package only.
"""
import glob
import os
import platform

from setuptools import find_packages, setup


def _extension_modules():
    """The ``inade._C`` extension, or nothing when building it is switched off."""
    if os.environ.get("INADE_NO_EXTENSION") == "1":
        return [], {}
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    import torch

    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    # OpenMP is what at::parallel_for uses in torch's CPU builds: without -fopenmp
    # the parallel loops compile to a single thread.
    cxx_flags = ["-O3", "-fopenmp", "-std=c++17"]
    # The extension is built on the machine that runs it, so use its vector units
    # (AVX2 gathers, FMA); INADE_PORTABLE_BUILD=1 builds for any x86-64 instead.
    if os.environ.get("INADE_PORTABLE_BUILD") != "1" and platform.machine() in ("x86_64", "AMD64"):
        cxx_flags += ["-march=native", "-mprefer-vector-width=512"]
    define_macros = []
    with_cuda = bool(cuda_sources) and torch.version.cuda is not None and CUDA_HOME is not None
    if with_cuda:
        ext = CUDAExtension(
            "inade._C",
            sources + cuda_sources,
            include_dirs=[os.path.join(here, "csrc")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17", "--use_fast_math"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        ext = CppExtension(
            "inade._C",
            sources,
            include_dirs=[os.path.join(here, "csrc")],
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extension_modules()

# Every dependency is named here and nowhere else: the Makefile and .ci/run install these extras
# (make setup: ".[test,build]"), and CI installs the wheel once per extra and runs its entry points.
# Each extra names what its feature imports.
EXTRAS = {
    # the Triton kernels (inade/kernels; the GPU backend, and the interpreter in the tests)
    "triton": ["triton>=3.0"],
    # INADE Studio's web server (python -m inade.studio): starlette + anyio, uvicorn, pydantic for the requests
    "studio": ["starlette>=0.37", "anyio>=4", "uvicorn>=0.29", "pydantic>=2"],
    # FID's matrix square root (scipy.linalg.sqrtm, as pytorch-fid)
    "metrics": ["scipy>=1.9"],
    # the plots of python -m bench.report (tables need nothing extra)
    "bench": ["matplotlib>=3.5"],
    # train.py's --tf_log (TensorBoard summaries) and its curves.png (web/index.html shows a table without it)
    "logs": ["tensorboard>=2.10", "matplotlib>=3.5"],
    # building the extension with pip install --no-build-isolation (torch itself: see the Makefile)
    "build": ["setuptools", "wheel", "ninja", "pybind11"],
    # python -m inade.export --format onnx (torch.onnx's exporter: onnx + onnxscript) and onnxruntime to
    # run the file (tested: onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.32.0); --format pt2 needs only torch
    "export": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
}
# The tests exercise every feature; the Studio's browser test also drives Chromium with playwright.
EXTRAS["test"] = ["pytest", "hypothesis", "playwright>=1.40",
                  *EXTRAS["triton"], *EXTRAS["studio"], *EXTRAS["metrics"], *EXTRAS["bench"], *EXTRAS["logs"],
                  *EXTRAS["export"]]
# Every feature (what a user wants; the tests' and the build's tools are not features).
EXTRAS["all"] = [*EXTRAS["triton"], *EXTRAS["studio"], *EXTRAS["metrics"], *EXTRAS["bench"], *EXTRAS["logs"],
                 *EXTRAS["export"]]

setup(
    name="inade",
    version="0.1.0",
    description="INADE (CVPR 2021) semantic image synthesis with fused instance-aware kernels",
    packages=find_packages(include=["inade", "inade.*"]) + ["inade.kernels"],
    package_dir={"inade.kernels": "kernels"},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "pillow", "tqdm"],
    entry_points={"console_scripts": ["inade-synth=inade.cli:main"]},
    extras_require=EXTRAS,
    package_data={"inade.studio": ["static/*"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
