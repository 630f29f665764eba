"""A first-in first-out bank of earlier samples' embeddings, for relations that look beyond one
batch: the student's (detached) and the reference's, of the same images."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RelationBank(nn.Module):
    """Holds up to ``size`` rows. Buffers, so a resumed stage continues with the same bank."""

    def __init__(self, size: int, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("student", torch.zeros(size, student_dim))
        self.register_buffer("teacher", torch.zeros(size, teacher_dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def contents(self) -> tuple[Tensor, Tensor]:
        n = int(self.filled)
        return self.student[:n], self.teacher[:n]

    @torch.no_grad()
    def push(self, student: Tensor, teacher: Tensor) -> None:
        """Add a batch, overwriting the oldest rows once full."""
        rows = min(student.shape[0], self.size)
        student, teacher = student[-rows:].detach().float(), teacher[-rows:].detach().float()
        at = (int(self.pointer) + torch.arange(rows, device=self.student.device)) % self.size
        self.student[at] = student.to(self.student.device)
        self.teacher[at] = teacher.to(self.teacher.device)
        self.pointer.fill_((int(self.pointer) + rows) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + rows))
