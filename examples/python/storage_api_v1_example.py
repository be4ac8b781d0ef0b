# The complete example of the MaxCompute Storage API guide for Python (V1,
# odps.apis.storage_api), exactly as printed there. Point it at `paiio serve` by replacing the
# four placeholders (tests/pyodps/test_v1.py does that) and exporting the keys the server
# was started with:
#   export ALIBABA_CLOUD_ACCESS_KEY_ID=... ALIBABA_CLOUD_ACCESS_KEY_SECRET=...
#   python storage_api_v1_example.py size
import logging
import os
import sys
from odps import ODPS
from odps.apis.storage_api import *

logging.basicConfig(
    format='%(asctime)s - %(pathname)s[line:%(lineno)d] - %(levelname)s: %(message)s',
    level=logging.INFO
)
logger = logging.getLogger(__name__)

# Step 1: Set up the connection
o = ODPS(
    os.getenv('ALIBABA_CLOUD_ACCESS_KEY_ID'),
    os.getenv('ALIBABA_CLOUD_ACCESS_KEY_SECRET'),
    project='<your-project>',
    endpoint='<your-endpoint>'
)
table = '<table-name>'
quota_name = '<quota-name>'


def get_arrow_client():
    odps_table = o.get_table(table)
    return StorageApiArrowClient(odps=o, table=odps_table, quota_name=quota_name)


# Step 2: Create a read session
def create_read_session(mode):
    client = get_arrow_client()
    req = TableBatchScanRequest(required_partitions=['pt=test_write_1'])
    if mode == 'size':
        req.split_options = SplitOptions.get_default_options(SplitOptions.SplitMode.SIZE)
    elif mode == 'row':
        req.split_options = SplitOptions.get_default_options(SplitOptions.SplitMode.ROW_OFFSET)
    resp = client.create_read_session(req)
    if resp.status != Status.OK:
        raise RuntimeError('Create read session failed')
    logger.info('Read session id: ' + resp.session_id)
    return resp.session_id


# Step 3: Verify the session status
def check_session_status(session_id):
    client = get_arrow_client()
    req = SessionRequest(session_id=session_id)
    resp = client.get_read_session(req)
    if resp.status != Status.OK:
        raise RuntimeError('Get read session failed')
    if resp.session_status == SessionStatus.NORMAL:
        logger.info('Session is ready: ' + resp.session_id)
    else:
        logger.info('Session status is not NORMAL yet: ' + str(resp.session_status))
    return resp.session_status == SessionStatus.NORMAL


# Step 4: Read data rows
def read_rows(session_id):
    client = get_arrow_client()
    req = SessionRequest(session_id=session_id)
    resp = client.get_read_session(req)
    if resp.status != Status.OK and resp.status != Status.WAIT:
        raise RuntimeError('Get read session failed')
    req = ReadRowsRequest(session_id=session_id)
    if resp.split_count == -1:
        req.row_index = 0
        req.row_count = resp.record_count
    else:
        req.split_index = 0
    reader = client.read_rows_arrow(req)
    total_line = 0
    while True:
        record_batch = reader.read()
        if record_batch is None:
            break
        total_line += record_batch.num_rows
    if reader.get_status() != Status.OK:
        raise RuntimeError('Read rows failed')
    logger.info('Total rows read: ' + str(total_line))
    return total_line


if __name__ == '__main__':
    if len(sys.argv) != 2:
        raise ValueError('Usage: python example.py <split-mode> (size|row)')
    mode = sys.argv[1]
    if mode not in ('row', 'size'):
        raise ValueError('Split mode must be "size" or "row"')
    session_id = create_read_session(mode)
    ready = check_session_status(session_id)
    if not ready:
        logger.info('Session not ready — poll check_session_status until it returns True')
        sys.exit(1)
    read_rows(session_id)
