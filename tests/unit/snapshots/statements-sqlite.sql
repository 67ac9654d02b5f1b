-- job_status
SELECT "status" FROM "batchactions_jobs" WHERE "id" = ?;

-- pending
SELECT "id", "batchIndex", "recordStartIndex", "recordEndIndex", "version" FROM "batchactions_batches" WHERE "jobId" = ? AND "status" = ? ORDER BY "batchIndex" LIMIT 16;

-- pending_locked
SELECT "id", "batchIndex", "recordStartIndex", "recordEndIndex", "version" FROM "batchactions_batches" WHERE "jobId" = ? AND "status" = ? ORDER BY "batchIndex" LIMIT 1 FOR UPDATE SKIP LOCKED;

-- any_pending
SELECT 1 FROM "batchactions_batches" WHERE "jobId" = ? AND "status" = ? LIMIT 1;

-- take
UPDATE "batchactions_batches" SET "status" = ?, "workerId" = ?, "claimedAt" = ?, "version" = "version" + 1 WHERE "id" = ? AND "version" = ? AND "status" = ?;

-- taken
SELECT 1 FROM "batchactions_batches" WHERE "id" = ? AND "version" = ? AND "workerId" = ? AND "claimedAt" = ? AND "status" = ?;

-- renew
UPDATE "batchactions_batches" SET "claimedAt" = CASE WHEN "claimedAt" >= ? THEN "claimedAt" + 1 ELSE ? END WHERE "id" = ? AND "jobId" = ? AND "workerId" = ? AND "version" = ? AND "status" = ? AND NOT EXISTS (SELECT 1 FROM "batchactions_jobs" WHERE "batchactions_jobs"."id" = ? AND "batchactions_jobs"."status" = 'ABORTED');

-- release
UPDATE "batchactions_batches" SET "status" = 'PENDING', "workerId" = NULL, "claimedAt" = NULL, "version" = "version" + 1 WHERE "id" = ? AND "jobId" = ? AND "workerId" = ? AND "status" = ?;

-- release_fenced
UPDATE "batchactions_batches" SET "status" = 'PENDING', "workerId" = NULL, "claimedAt" = NULL, "version" = "version" + 1 WHERE "id" = ? AND "jobId" = ? AND "workerId" = ? AND "status" = ? AND "version" = ?;

-- reclaim
UPDATE "batchactions_batches" SET "status" = 'PENDING', "workerId" = NULL, "claimedAt" = NULL, "version" = "version" + 1 WHERE "jobId" = ? AND "status" = ? AND ("claimedAt" < ? OR "claimedAt" IS NULL);

-- finish
UPDATE "batchactions_batches" SET "status" = ?, "processedCount" = ?, "failedCount" = ?, "version" = "version" + 1 WHERE "id" = ? AND "jobId" = ? AND "workerId" = ? AND "version" = ? AND "status" = ?;

-- finished
SELECT 1 FROM "batchactions_batches" WHERE "id" = ? AND "jobId" = ? AND "workerId" = ? AND "version" = ? AND "status" = ?;

-- unfinished
SELECT 1 FROM "batchactions_batches" WHERE "jobId" = ? AND "status" NOT IN ('COMPLETED', 'FAILED') LIMIT 1;

-- finalize
UPDATE "batchactions_jobs" SET "status" = CASE WHEN EXISTS (SELECT 1 FROM "batchactions_batches" WHERE "batchactions_batches"."jobId" = ? AND "batchactions_batches"."status" = 'FAILED') THEN 'FAILED' ELSE 'COMPLETED' END, "completedAt" = ? WHERE "id" = ? AND "status" = ? AND EXISTS (SELECT 1 FROM "batchactions_batches" WHERE "batchactions_batches"."jobId" = ?) AND NOT EXISTS (SELECT 1 FROM "batchactions_batches" WHERE "batchactions_batches"."jobId" = ? AND "batchactions_batches"."status" NOT IN ('COMPLETED', 'FAILED'));

-- finalized
SELECT 1 FROM "batchactions_jobs" WHERE "id" = ? AND "status" IN ('COMPLETED', 'FAILED') AND "completedAt" = ?;

-- pause
UPDATE "batchactions_jobs" SET "status" = 'PAUSED' WHERE "id" = ? AND "status" = 'PROCESSING';

-- resume
UPDATE "batchactions_jobs" SET "status" = 'PROCESSING' WHERE "id" = ? AND "status" = 'PAUSED';

-- abort
UPDATE "batchactions_jobs" SET "status" = 'ABORTED', "completedAt" = ? WHERE "id" = ? AND "status" IN ('CREATED', 'PROCESSING', 'PAUSED');

-- activate
UPDATE "batchactions_jobs" SET "status" = ?, "batches" = ?, "totalRecords" = ?, "startedAt" = ?, "completedAt" = ?, "distributed" = ? WHERE "id" = ? AND "status" = 'CREATED';

