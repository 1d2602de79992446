"""Severity as ECR's basic scanning reports it, from an advisory's CVSS vectors (the ``cvss`` library) or, when it
has none, the severity word its database gives."""

from __future__ import annotations

from dataclasses import dataclass

import cvss

LABELS = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
RANK = {label: i for i, label in enumerate(LABELS)}  # lower is worse
_WORDS = {"CRITICAL": "CRITICAL", "HIGH": "HIGH", "IMPORTANT": "HIGH", "MODERATE": "MEDIUM", "MEDIUM": "MEDIUM",
          "LOW": "LOW", "NEGLIGIBLE": "INFORMATIONAL", "UNIMPORTANT": "INFORMATIONAL", "NONE": "INFORMATIONAL"}


@dataclass(frozen=True, slots=True)
class Severity:
    label: str
    score: float | None = None  # CVSS v3 base score when there is a v3 vector (ECR's CVSS3_SCORE)
    vector: str = ""


def label_for(score: float) -> str:
    """CVSS v3 qualitative ratings (also v4's and the ranges ECR uses)."""
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    if score > 0.0:
        return "LOW"
    return "INFORMATIONAL"


def from_osv(record: dict) -> Severity:
    """v3 vectors first (what ECR reports), then v4, then v2; then the database's own word."""
    by_type: dict[str, str] = {}
    for entry in record.get("severity") or []:
        if isinstance(entry, dict) and isinstance(entry.get("score"), str):
            by_type.setdefault(str(entry.get("type")), entry["score"])
    vector = by_type.get("CVSS_V3")
    if vector:
        try:
            score = float(cvss.CVSS3(vector).base_score)
            return Severity(label_for(score), score, vector)
        except cvss.CVSSError:
            pass
    for kind, parse in (("CVSS_V4", cvss.CVSS4), ("CVSS_V2", cvss.CVSS2)):
        vector = by_type.get(kind)
        if vector:
            try:
                return Severity(label_for(float(parse(vector).base_score)))
            except cvss.CVSSError:
                pass
    for holder in [record.get("database_specific"), *[a.get("ecosystem_specific") for a in _affected(record)],
                   *[a.get("database_specific") for a in _affected(record)]]:
        if isinstance(holder, dict) and isinstance(holder.get("severity"), str):
            word = _WORDS.get(holder["severity"].upper())
            if word:
                return Severity(word)
    return Severity("UNDEFINED")


def _affected(record: dict) -> list[dict]:
    return [a for a in record.get("affected") or [] if isinstance(a, dict)]
