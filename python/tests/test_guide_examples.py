"""The TableReader and TableWriter examples of PAI's paiio guide, run as printed with only the
configuration path changed: on the local warehouse and through `paiio serve`."""
import subprocess
import sys

import pytest

# From paiio-guide.txt, "TableWriter usage instructions" > Example (verbatim but the path).
WRITER_EXAMPLE = '''
import paiio
import os

# Specify the path of the configuration file. Replace this with the actual path.
os.environ['ODPS_CONFIG_FILE_PATH'] = "@CONFIG@"
# Prepare the data.
values = [(25, "Apple", 5.0, False),
          (38, "Pear", 4.5, False),
          (17, "Watermelon", 2.2, False)]

# Open a table and return a writer object. Replace the table name and the corresponding MaxCompute project name with your own.
writer = paiio.python_io.TableWriter("odps://project/tables/test")

# Write records to columns 0 to 3 of the table.
records = writer.write(values, indices=[0, 1, 2, 3])

# Close the writer.
writer.close()
'''

# From paiio-guide.txt, "TableReader usage instructions" > Example (verbatim but the path),
# with prints of what the comments say is returned.
READER_EXAMPLE = '''
import os
import paiio

# Specify the path of the configuration file. Replace this with the actual path.
os.environ['ODPS_CONFIG_FILE_PATH'] = "@CONFIG@"
# Open a table and return a reader object. Replace the table name and the corresponding MaxCompute project name with your own.
reader = paiio.python_io.TableReader("odps://myproject/tables/test", selected_cols="uid,name,price")

# Get the total number of rows in the table.
total_records_num = reader.get_row_count() # return 3

batch_size = 2
# Read the table. The return value will be a recarray in the format of [(uid, name, price)*2].
records = reader.read(batch_size) # Returns [(25, "Apple", 5.0), (38, "Pear", 4.5)]
print(total_records_num, records.tolist())
records = reader.read(batch_size) # Returns [(17, "Watermelon", 2.2)]
print(records.tolist())
# Reading further will throw an OutOfRange exception.
try:
    reader.read(batch_size)
except paiio.python_io.OutOfRangeException:
    print("OutOfRange")

# Close the reader.
reader.close()
'''

EXPECTED = ("3 [(25, 'Apple', 5.0), (38, 'Pear', 4.5)]\n"
            "[(17, 'Watermelon', 2.2)]\n"
            "OutOfRange\n")

SCHEMA = "uid bigint, name string, price double, virtual boolean"


def run(code, config, env_extra=None):
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("ODPS_CONFIG_FILE_PATH", "PAIIO_WAREHOUSE")}
    out = subprocess.run([sys.executable, "-c", code.replace("@CONFIG@", config)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def check(wh_like, config):
    wh_like.create("test", SCHEMA, project="project")
    run(WRITER_EXAMPLE, config)
    assert wh_like.count("odps://project/tables/test") == 3
    # The reader example reads myproject.test: the rows the writer example wrote.
    wh_like.create("test", SCHEMA, project="myproject")
    exported = wh_like.tmp + "/test.arrow"
    wh_like.cli("table", "export", "odps://project/tables/test", exported)
    wh_like.cli("table", "import", "odps://myproject/tables/test", exported)
    assert run(READER_EXAMPLE, config) == EXPECTED


def test_guide_examples_on_the_local_warehouse(wh, tmp_path):
    config = tmp_path / "odps_config.ini"
    config.write_text(f"end_point={wh.root}\n")
    check(wh, str(config))


@pytest.fixture
def fresh_server(tmp_path):
    from conftest import Server

    s = Server(tmp_path / "warehouse", tmp_path)
    yield s
    s.stop()


def test_guide_examples_through_paiio_serve(fresh_server):
    check(fresh_server, fresh_server.config)
