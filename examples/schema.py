"""The pydantic schema of examples/contacts.csv: ``--schema examples.schema:Contact``.

CSV cells arrive as strings; pydantic turns them into the declared types. A row that does
not fit is stored as an ``invalid`` record with one error per problem.
"""

from __future__ import annotations

import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"


class Contact(BaseModel):
    """One contact to register."""

    model_config = ConfigDict(str_strip_whitespace=True)

    email: str = Field(max_length=254, pattern=EMAIL)
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    company: str | None = Field(default=None, max_length=200)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")
    age: int | None = Field(default=None, ge=13, le=120)
    signup_date: datetime.date
    newsletter: bool = False

    @field_validator("company", "age", mode="before")
    @classmethod
    def empty_cell_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("email")
    @classmethod
    def lower_case_email(cls, value: str) -> str:
        return value.lower()
