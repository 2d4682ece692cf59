"""A tracked run's bookkeeping in Redis: its keys, the scripts that keep them, failure records.

A run that ``emit run`` follows keeps everything in keys of the router's own
Redis (:func:`run_keys`): how many jobs are pending, the output lines of sinks,
failure records, and the jobs running now.  Jobs, the command line and RQ's
failure callback change them only through the Lua scripts here, so that a
job's end is counted once however many attempts of it, or reports of its
death, arrive.

A job's end and its attempt are marked in the job's own hash when the job
lives in that Redis, so that the marks expire with the job and cost the run
nothing; a job of a node with a ``connection`` of its own lives elsewhere,
and its marks go into a key of the run (:func:`marks_of`).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from ..codec import JSONSerializer

#: How long a run's bookkeeping keys, and RQ's record of a failed job, live in Redis.
RUN_TTL = 24 * 3600
#: Most characters of an error text a failure record keeps.
ERROR_TEXT_LIMIT = 2000
#: The field of a job's marks that says its end was booked, ``sent`` or ``failed``.
DONE_FIELD = "emit:done"
#: The field of a job's marks that names the attempt running it.
ATTEMPT_FIELD = "emit:attempt"
#: Entries (one per job: the events of its hops) a traced run's stream keeps;
#: older ones are trimmed, so a reader that falls this far behind loses them.
EVENTS_MAXLEN = 10_000

# Lua helpers shared by the scripts: RPUSH a range of ARGV in bounded chunks
# (unpack has a stack limit), and refresh the expiry of the bookkeeping keys.
_LUA_HELPERS = """
local function push(key, first, last)
  for i = first, last, 1000 do
    redis.call('rpush', key, unpack(ARGV, i, math.min(i + 999, last)))
  end
end
local function touch(ttl, ...)
  for _, key in ipairs({...}) do redis.call('expire', key, ttl) end
end
"""

# A job of a tracked run starts.  KEYS: pending, running, alive, marks.
# ARGV: job id, what the attempt is (JSON), alive key's life in ms, ttl, done
# field, attempt field, attempt id, the marks' ttl ('' for the job's hash).
# A run Redis no longer knows (restarted without persistence) is not
# revived, and a job whose sends were made (its worker killed before RQ
# heard) is not run twice; a failed one requeued by hand runs, but its end is
# not counted again.  The attempt id goes into the marks, where the next
# attempt replaces it: RQ rewrites the job's own fields (started_at among
# them) when it handles a failure.
START_SCRIPT = """
if redis.call('exists', KEYS[1]) == 0 then return 'gone' end
if redis.call('hget', KEYS[4], ARGV[5]) == 'sent' then return 'done' end
redis.call('hset', KEYS[4], ARGV[6], ARGV[7])
if ARGV[8] ~= '' then redis.call('expire', KEYS[4], ARGV[8]) end
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
redis.call('expire', KEYS[2], ARGV[4])
redis.call('set', KEYS[3], '1', 'PX', ARGV[3])
return 'run'
"""

# One send of a tracked run.  KEYS: pending, out, failed, running, marks
# ('' for a send that ends no RQ job).  ARGV: 'new' (the command line, which
# may create the run) or 'more', change of the jobs pending, job id ('' when
# the send ends no job), ttl, number of sink lines, done field, then the sink
# lines and failure records.
BOOK_SCRIPT = (
    _LUA_HELPERS
    + """
if ARGV[1] ~= 'new' and redis.call('exists', KEYS[1]) == 0 then return 0 end
local change = tonumber(ARGV[2])
if ARGV[3] ~= '' then
  redis.call('hdel', KEYS[4], ARGV[3])
  if KEYS[5] == '' or redis.call('exists', KEYS[5]) == 0
      or redis.call('hsetnx', KEYS[5], ARGV[6], 'sent') == 1 then
    change = change - 1
  end
end
if change ~= 0 then redis.call('incrby', KEYS[1], change) end
local lines = tonumber(ARGV[5])
push(KEYS[2], 7, 6 + lines)
push(KEYS[3], 7 + lines, #ARGV)
touch(ARGV[4], KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""
)

# A job of a tracked run ends failed.  KEYS: pending, failed, running, marks.
# ARGV: job id, ttl, done field, the marks' ttl ('' for the job's hash), then
# the failure records.  Booked once: RQ calls the failure callback before it
# decides to retry, a worker's cleanup and the command line may both find
# the same dead job.
FAIL_SCRIPT = (
    _LUA_HELPERS
    + """
redis.call('hdel', KEYS[3], ARGV[1])
if redis.call('exists', KEYS[1]) == 0 then return 0 end
if redis.call('hsetnx', KEYS[4], ARGV[3], 'failed') == 0 then return 0 end
if ARGV[4] ~= '' then redis.call('expire', KEYS[4], ARGV[4]) end
redis.call('decr', KEYS[1])
push(KEYS[2], 5, #ARGV)
touch(ARGV[2], KEYS[1], KEYS[2])
return 1
"""
)


def run_keys(run: str) -> dict[str, str]:
    """The Redis keys of a run: jobs pending, output lines, failure records, jobs
    running, and the stream of hop events of a traced run."""
    return {
        "pending": f"emit:run:{run}:pending",
        "out": f"emit:run:{run}:out",
        "failed": f"emit:run:{run}:failed",
        "running": f"emit:run:{run}:running",
        "events": f"emit:run:{run}:events",
    }


def alive_key(run: str, job_id: str) -> str:
    """The key a running job of ``run`` keeps from expiring while its process lives."""
    return f"emit:run:{run}:alive:{job_id}"


def same_redis(one: Redis, other: Redis) -> bool:
    """Whether two clients talk to one Redis database: one server, one db number."""
    return one is other or _address(one) == _address(other)


def _address(client: Redis) -> tuple[Any, ...]:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db", 0)


def marks_of(run: str, job_id: str, job_redis: Redis, home: Redis) -> tuple[str, str]:
    """Where a job's end and attempt are marked in ``home``, the run's Redis, and
    the life those marks are given there ('' when RQ's job hash holds them)."""
    if same_redis(job_redis, home):
        return Job.key_for(job_id), ""
    return f"emit:run:{run}:marks:{job_id}", str(RUN_TTL)


def report_failure(job: Job, home: Redis, kind: str, text: str) -> bool:
    """Book a failed job's messages as failures of its run, once; True if this call did."""
    payload = job.args[0]
    run = payload["run"]
    keys = run_keys(run)
    marks, marks_ttl = marks_of(run, job.id, job.connection, home)
    records = [failure_record(payload["node"], kind, text, item) for item in payload["items"]]
    booked = home.eval(
        FAIL_SCRIPT,
        4,
        keys["pending"],
        keys["failed"],
        keys["running"],
        marks,
        job.id,
        RUN_TTL,
        DONE_FIELD,
        marks_ttl,
        *records,
    )
    return bool(booked)


def failure_text(kind: type, value: BaseException) -> str:
    """How a job-level failure reads in its messages' failure records."""
    if issubclass(kind, AbandonedJobError):
        return "worker died: the worker running this batch stopped before finishing it"
    if issubclass(kind, JobTimeoutException):
        return f"timed out: {value}"
    return f"{kind.__name__}: {value}" if str(value) else kind.__name__


def failure_record(node: str, kind: str, text: str, item: list[Any], hop: str | None = None) -> str:
    """The failure record of one message (``[fields, origin, parent, hops, where]``).

    ``hop`` names the hop whose event (in a traced run) tells of this failure
    already; a batch that failed as a whole has no such events.
    """
    fields, origin, parent, hops, where = item
    record: dict[str, Any] = {
        "kind": "failure",
        "node": node,
        "origin": origin,
        "where": where,
        "error": {"type": kind, "text": clip(text)},
        "message": fields,
        "parent": parent,
        "hops": hops,
    }
    if hop is not None:
        record["hop"] = hop
    return JSONSerializer.dumps(record).decode()


def clip(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
