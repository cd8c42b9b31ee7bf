"""The program model: an expression graph over encrypted vectors, its compiler into
ciphertext-level steps and tasks, and a plaintext reference. Pure: it never imports
``openfhe`` and does no I/O."""

from hswarm.program.circuit import Circuit, Step, Task, Terminal
from hswarm.program.compiler import compile_program
from hswarm.program.graph import Expr, Node, Program, matvec

__all__ = ["Circuit", "Expr", "Node", "Program", "Step", "Task", "Terminal", "compile_program", "matvec"]
