"""The job queue on PostgreSQL: the jobs of a worker that stopped heartbeating go back to the queue, and a run is
never left with a lost job blocking the one that should resume it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from aiops_executor.executions.queue import RunQueue


@pytest.fixture
async def queue(postgres_url: str) -> AsyncIterator[RunQueue]:
    run_queue = RunQueue(postgres_url, lease_seconds=1.0)
    await run_queue.open()
    try:
        yield run_queue
    finally:
        await run_queue.close()


async def lose_worker_running(queue: RunQueue, execution_id: uuid.UUID) -> int:
    """Enqueues the run's job and leaves it running under a worker whose last heartbeat is an hour old;
    returns the job's id."""
    assert await queue.enqueue(execution_id)
    [(job_id, _)] = await queue.jobs(execution_id)
    worker_id = await queue.app.job_manager.register_worker()
    await queue.app.connector.execute_query_async(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' WHERE id = %(worker)s",
        worker=worker_id,
    )
    await queue.app.connector.execute_query_async(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %(worker)s WHERE id = %(job)s",
        worker=worker_id,
        job=job_id,
    )
    return job_id


async def test_a_lost_workers_job_goes_back_to_the_queue(queue: RunQueue) -> None:
    execution_id = uuid.uuid4()
    job_id = await lose_worker_running(queue, execution_id)

    reclaimed, workers = await queue.reclaim_stalled()

    assert (reclaimed, workers) >= (1, 1)
    assert await queue.jobs(execution_id) == [(job_id, "todo")]


async def test_a_lost_workers_job_gives_way_to_the_job_already_waiting_for_its_run(queue: RunQueue) -> None:
    # The worker died after the run reached "awaiting approval" but before its job was marked finished; the
    # decision then queued a new job for the run, which cannot start while the old one holds the run's lock.
    execution_id = uuid.uuid4()
    lost_job = await lose_worker_running(queue, execution_id)
    assert await queue.enqueue(execution_id)
    [waiting_job] = [job for job, status in await queue.jobs(execution_id) if status == "todo"]

    reclaimed, _ = await queue.reclaim_stalled()

    assert reclaimed >= 1
    assert await queue.jobs(execution_id) == [(waiting_job, "todo")]
    assert waiting_job != lost_job


async def test_a_job_another_worker_has_taken_is_left_alone(queue: RunQueue) -> None:
    execution_id = uuid.uuid4()
    job_id = await lose_worker_running(queue, execution_id)
    assert await queue.enqueue(execution_id)
    stalled = list(await queue.app.job_manager.get_stalled_jobs(queue="executions", seconds_since_heartbeat=1.0))
    # Before this process acts on what it read, another one reclaims the job and a live worker starts it.
    live_worker = await queue.app.job_manager.register_worker()
    await queue.app.connector.execute_query_async(
        "UPDATE procrastinate_jobs SET worker_id = %(worker)s WHERE id = %(job)s", worker=live_worker, job=job_id
    )
    [lost] = [job for job in stalled if job.id == job_id]

    assert not await queue._drop_superseded(lost.id, lost.worker_id)
    assert (job_id, "doing") in await queue.jobs(execution_id)
