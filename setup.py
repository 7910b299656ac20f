"""The one compiled module: host history's kernel (inference/_history_kernel.pyx, Cython).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built
(no C compiler), the install goes on and host history is counted with numpy
(`inference.history.HostHistory`): the same answers, slower; `edgeloop detect` says which
it runs at start.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("inference._history_kernel", ["inference/_history_kernel.pyx"],
                             extra_compile_args=["-O2"], optional=True)])
