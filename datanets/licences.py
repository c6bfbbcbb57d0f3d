"""The licences a Datanet or a contribution may carry, and which contribution licences fit which Datanet licence.

A contribution under licence C fits a Datanet under licence D when the contributed records may be redistributed as
part of a dataset published under D without breaking C: C must ask for nothing that D does not also ask for
(attribution, share-alike, non-commercial use). The table is conservative: where compatibility is debated (Apache-2.0's
patent and NOTICE terms inside a Creative Commons dataset, CC BY-SA inside ODbL), the answer is no. docs/datanets.md
shows the same table.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Licence(NamedTuple):
    spdx: str
    name: str
    url: str


LICENCES: Final[dict[str, Licence]] = {
    licence.spdx: licence
    for licence in (
        Licence(
            "CC0-1.0", "Creative Commons Zero 1.0 (public domain)", "https://creativecommons.org/publicdomain/zero/1.0/"
        ),
        Licence("CC-BY-4.0", "Creative Commons Attribution 4.0", "https://creativecommons.org/licenses/by/4.0/"),
        Licence(
            "CC-BY-SA-4.0",
            "Creative Commons Attribution-ShareAlike 4.0",
            "https://creativecommons.org/licenses/by-sa/4.0/",
        ),
        Licence(
            "CC-BY-NC-4.0",
            "Creative Commons Attribution-NonCommercial 4.0",
            "https://creativecommons.org/licenses/by-nc/4.0/",
        ),
        Licence("ODC-By-1.0", "Open Data Commons Attribution 1.0", "https://opendatacommons.org/licenses/by/1-0/"),
        Licence("ODbL-1.0", "Open Database License 1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
        Licence("MIT", "MIT License", "https://opensource.org/license/mit"),
        Licence("Apache-2.0", "Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    )
}

LICENCE_CHOICES: Final = [(licence.spdx, f"{licence.spdx}: {licence.name}") for licence in LICENCES.values()]

# Datanet licence -> the contribution licences it accepts. Every licence accepts itself and CC0.
COMPATIBLE_CONTRIBUTION_LICENCES: Final[dict[str, frozenset[str]]] = {
    "CC0-1.0": frozenset({"CC0-1.0"}),
    "MIT": frozenset({"CC0-1.0", "MIT"}),
    "Apache-2.0": frozenset({"CC0-1.0", "MIT", "Apache-2.0"}),
    "CC-BY-4.0": frozenset({"CC0-1.0", "MIT", "CC-BY-4.0"}),
    "ODC-By-1.0": frozenset({"CC0-1.0", "MIT", "CC-BY-4.0", "ODC-By-1.0"}),
    "CC-BY-SA-4.0": frozenset({"CC0-1.0", "MIT", "CC-BY-4.0", "CC-BY-SA-4.0"}),
    "ODbL-1.0": frozenset({"CC0-1.0", "MIT", "CC-BY-4.0", "ODC-By-1.0", "ODbL-1.0"}),
    "CC-BY-NC-4.0": frozenset({"CC0-1.0", "MIT", "CC-BY-4.0", "CC-BY-NC-4.0"}),
}


def licence_compatible(*, datanet_licence: str, contribution_licence: str) -> bool:
    """True when records under ``contribution_licence`` may join a Datanet under ``datanet_licence``."""
    return contribution_licence in COMPATIBLE_CONTRIBUTION_LICENCES.get(datanet_licence, frozenset())


def compatible_licences(datanet_licence: str) -> list[str]:
    """The contribution licences a Datanet under ``datanet_licence`` accepts, in the order of ``LICENCES``."""
    accepted = COMPATIBLE_CONTRIBUTION_LICENCES.get(datanet_licence, frozenset())
    return [spdx for spdx in LICENCES if spdx in accepted]
