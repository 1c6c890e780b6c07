"""The file adapter: placement files out, status return files in, through a drop folder.

- ``mapping``: a partner's status codes -> canonical reports (YAML per partner), pure;
- ``outgoing``: placement and notice CSV files, written atomically;
- ``incoming``: parsing return files into reports or quarantine entries;
- ``quarantine``: where rows the adapter will not guess about are recorded;
- ``adapter``: ``FileAdapter``, both directions under the partner's own AMQP user.
"""

from adapters.files.adapter import DropFolder, FileAdapter, FileReport
from adapters.files.incoming import ParsedFile, ParsedRow, parse_return_file
from adapters.files.mapping import (
    CodeRule,
    MappingError,
    RowProblem,
    StatusMapping,
    load_mapping,
    parse_mapping,
    row_message_id,
    translate,
)
from adapters.files.outgoing import NOTICE_COLUMNS, PLACEMENT_COLUMNS
from adapters.files.quarantine import (
    InMemoryQuarantineLog,
    MongoQuarantineLog,
    QuarantineEntry,
    QuarantineLog,
)

__all__ = [
    "NOTICE_COLUMNS",
    "PLACEMENT_COLUMNS",
    "CodeRule",
    "DropFolder",
    "FileAdapter",
    "FileReport",
    "InMemoryQuarantineLog",
    "MappingError",
    "MongoQuarantineLog",
    "ParsedFile",
    "ParsedRow",
    "QuarantineEntry",
    "QuarantineLog",
    "RowProblem",
    "StatusMapping",
    "load_mapping",
    "parse_mapping",
    "parse_return_file",
    "row_message_id",
    "translate",
]
