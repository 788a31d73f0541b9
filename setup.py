"""Build step for the one C extension (everything else is in pyproject.toml).

``derain.ops._fused_filter`` is the fused inference kernel of EfDeRain's full-resolution stage. It is
optional: without a C compiler the package installs and runs the same function in eager PyTorch.
"""

import platform

from setuptools import Extension, setup

# AVX-512 code paths (one of the kernel's clones) use 512-bit vectors
X86 = platform.machine().lower() in ("x86_64", "amd64")

setup(
    ext_modules=[
        Extension(
            "derain.ops._fused_filter",
            sources=["src/derain/ops/_fused_filter.c"],
            extra_compile_args=["-O3"] + (["-mprefer-vector-width=512"] if X86 else []),
            extra_link_args=["-pthread"],
            libraries=[] if platform.system() == "Windows" else ["m"],
            optional=True,
        )
    ]
)
