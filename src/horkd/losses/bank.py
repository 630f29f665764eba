"""A first-in first-out bank of earlier samples' embeddings, for relations that look beyond one
batch: the student's (detached) and the reference's, of the same images."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RelationBank(nn.Module):
    """Holds up to ``size`` rows. Buffers, so a resumed stage continues with the same bank.

    Only finite rows enter it: one NaN or infinite embedding would make every distance it takes
    part in NaN, for as many steps as the row stays in the bank. The counters are tensors and
    :meth:`push` decides on the device, so filling the bank never waits for the host.
    """

    def __init__(self, size: int, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("student", torch.zeros(size, student_dim))
        self.register_buffer("teacher", torch.zeros(size, teacher_dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def contents(self) -> tuple[Tensor, Tensor]:
        """The filled rows (reads the counter: a wait for the device; the loss uses
        :meth:`buffers_and_filled` instead)."""
        n = int(self.filled)
        return self.student[:n], self.teacher[:n]

    def buffers_and_filled(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every row and the count of filled ones, as a tensor: the rows from ``filled`` on
        are to be left out, without the host reading the count."""
        return self.student, self.teacher, self.filled

    @torch.no_grad()
    def push(self, student: Tensor, teacher: Tensor, accept: Tensor | None = None) -> None:
        """Add a batch's finite rows, overwriting the oldest rows once full.

        Args:
            student: The student's embeddings ``[N, student_dim]``; detached here.
            teacher: The reference's embeddings ``[N, teacher_dim]`` of the same samples.
            accept: A boolean scalar tensor: ``False`` leaves the whole batch out (the caller
                found its loss non-finite). ``None``: every finite row enters.

        Of a batch larger than the bank, its last ``size`` rows are considered. A row enters
        when both its embeddings are finite (and ``accept`` holds); the rows that enter keep
        their order and take the next slots, and the bank is otherwise left as it was.
        """
        rows = min(student.shape[0], self.size)
        device = self.student.device
        student = student[-rows:].detach().float().to(device)
        teacher = teacher[-rows:].detach().float().to(device)
        keep = torch.isfinite(student).all(1) & torch.isfinite(teacher).all(1)
        if accept is not None:
            keep &= accept.to(device=device, dtype=torch.bool)
        # the kept rows first, in their order; every row is written, a left-out one as the
        # slot's own old contents, so no step depends on how many rows were kept
        order = torch.argsort((~keep).to(torch.uint8), stable=True)
        kept = keep.index_select(0, order).unsqueeze(1)
        at = (self.pointer + torch.arange(rows, device=device)) % self.size
        for bank, new in ((self.student, student), (self.teacher, teacher)):
            rows_in = torch.where(kept, new.index_select(0, order), bank.index_select(0, at))
            bank.index_copy_(0, at, rows_in)
        added = keep.sum()
        self.pointer.copy_((self.pointer + added) % self.size)
        self.filled.copy_(torch.clamp(self.filled + added, max=self.size))
