"""What every config section shares: the section base (unknown keys refused, assignments
validated) and the constrained value types, for :mod:`fltorrent.config` and its split-out
sections (``config_chunks``, ``config_learn``, ``config_plans``, ``config_robust``,
``config_security``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Seconds = Positive
Mbit = Positive
# User code by name, "package.module:attribute" (fltorrent.learn.plugins resolves it).
IMPORT_STRING = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
"""``train.device``: auto, cpu, cuda or cuda:N."""
ImportString = Annotated[str, Field(pattern=IMPORT_STRING)]


class Section(BaseModel):
    """A config section: every key has a default; an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
