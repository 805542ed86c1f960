"""A plugin a team installs long after goals started flowing: it tells an HTTP service
(``GOALHUB_TALLY_URL``) about every goal, and raises when the service answers an error."""

import os

import requests

import goalhub


@goalhub.receiver("goal.created")
def tally(goal_id, _cls):
    response = requests.post(os.environ["GOALHUB_TALLY_URL"], json={"goal_id": goal_id, "cls": _cls}, timeout=5)
    response.raise_for_status()
    return {"status": response.status_code}
