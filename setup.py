"""Build of the optional native kernels (``pyrovae._kernels``); everything else is in pyproject.toml.

The extension is optional: where it does not compile (no C compiler, no OpenMP, another
platform), installation goes on and :mod:`pyrovae.kernels` falls back to torch.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyrovae._kernels",
            sources=["pyrovae/_kernels.c"],
            extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno", "-Wno-psabi"],
            extra_link_args=["-fopenmp", "-ldl"],
            optional=True,
        )
    ]
)
