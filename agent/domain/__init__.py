"""Shared domain vocabulary, stated once: imports nothing else of agent."""

from agent.domain.batch import MAX_BATCH, MAX_BATCH_BODY, BatchError, ElementError, parse_batch
from agent.domain.durations import format_duration, parse_duration
from agent.domain.health import Health, HealthStatus
from agent.domain.hostport import HostPort, parse_hostport
from agent.domain.origin import (
    ORIGIN_ID_RE,
    ORIGIN_KEYS,
    OriginSpec,
    parse_origin,
    read_origin,
)
from agent.domain.problems import ConfigError, TableReader, field_default
from agent.domain.roles import ROLE
from agent.domain.values import Problem, duration, header_pairs, positive_duration, show, str_table

__all__ = [
    "MAX_BATCH",
    "MAX_BATCH_BODY",
    "ORIGIN_ID_RE",
    "ORIGIN_KEYS",
    "ROLE",
    "BatchError",
    "ConfigError",
    "ElementError",
    "Health",
    "HealthStatus",
    "HostPort",
    "OriginSpec",
    "Problem",
    "TableReader",
    "duration",
    "field_default",
    "format_duration",
    "header_pairs",
    "parse_batch",
    "parse_duration",
    "parse_hostport",
    "parse_origin",
    "positive_duration",
    "read_origin",
    "show",
    "str_table",
]
