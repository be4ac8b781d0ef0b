"""The reader and writer through `paiio serve --tunnel-only`, as a public endpoint serves: a
plain ini file (access_id, access_key, end_point) reaches the data over the MaxCompute Tunnel,
with the same semantics as over the Storage API and locally."""
import pytest

from conftest import Server
# The same tests as over the Storage API, collected again here against this module's server.
from test_server import (  # noqa: F401
    test_pyarrow_stream, test_read_write_round_trip, test_record_defaults, test_slices_and_batches,
    test_writer_conflict_over_the_service,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-tunnel")
    s = Server(tmp / "warehouse", tmp, "--tunnel-only")
    yield s
    s.stop()
