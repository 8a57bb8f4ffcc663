"""ORM models of the pool's sample tables (tenantkit_sample.projects and tasks), for the
SQLAlchemy suites: a composite key and foreign key that lead with tenant_id, as protect_table
requires; AsyncAttrs for lazy loads awaited on asyncio."""

from sqlalchemy import BigInteger, ForeignKeyConstraint
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from lambda_src.tenancy import POOL

SCHEMA = POOL.sample_schema


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012 (SQLAlchemy's declarative form)

    tenant_id: Mapped[str] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str]
    tasks: Mapped[list["Task"]] = relationship(back_populates="project", order_by="Task.task_id")


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "project_id"],
            [f"{SCHEMA}.projects.tenant_id", f"{SCHEMA}.projects.project_id"],
        ),
        {"schema": SCHEMA},
    )

    tenant_id: Mapped[str] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    project_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str]
    done: Mapped[bool] = mapped_column(default=False)
    project: Mapped[Project] = relationship(back_populates="tasks")
