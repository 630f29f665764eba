"""Frozen references that combine networks: what the HORKD student imitates when it learns from
the assistant and, for its class probabilities, from the teacher as well."""

from __future__ import annotations

from torch import Tensor, nn

from horkd.models import ModelOutput


class OnDegradedInput(nn.Module):
    """A network that learnt on LR, handed HR: it degrades the batch itself (the students' LR
    view, re-upsampled to the HR size) before looking. Every method and the reference cache give
    a reference the HR batch, so an LR assistant needs no other path."""

    def __init__(self, network: nn.Module, degrade: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.degrade = degrade
        self.embed_dim: int = network.embed_dim

    def forward(self, x: Tensor) -> ModelOutput:
        return self.network(self.degrade(x))


class LogitsFromTeacher(nn.Module):
    """The assistant's embedding (the bridge: the student's own architecture, so the same
    embedding space) with the teacher's logits (the strongest classifier there is).

    METHOD.md lets the student learn from A "optionally T as well"; softened logits need no
    shared architecture, so they can come from T directly. The pair is one frozen network to
    the method, so the reference cache, freezing and checkpointing treat it as any reference.
    """

    def __init__(self, assistant: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.assistant = assistant
        self.teacher = teacher
        self.embed_dim: int = assistant.embed_dim

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(self.assistant(x).embedding, self.teacher(x).logits)
