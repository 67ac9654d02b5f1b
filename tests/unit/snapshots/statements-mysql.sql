-- job_status
SELECT `status` FROM `batchactions_jobs` WHERE `id` = %s;

-- pending
SELECT `id`, `batchIndex`, `recordStartIndex`, `recordEndIndex`, `version` FROM `batchactions_batches` WHERE `jobId` = %s AND `status` = %s ORDER BY `batchIndex` LIMIT 16;

-- pending_locked
SELECT `id`, `batchIndex`, `recordStartIndex`, `recordEndIndex`, `version` FROM `batchactions_batches` WHERE `jobId` = %s AND `status` = %s ORDER BY `batchIndex` LIMIT 1 FOR UPDATE SKIP LOCKED;

-- any_pending
SELECT 1 FROM `batchactions_batches` WHERE `jobId` = %s AND `status` = %s LIMIT 1;

-- take
UPDATE `batchactions_batches` SET `status` = %s, `workerId` = %s, `claimedAt` = %s, `version` = `version` + 1 WHERE `id` = %s AND `version` = %s AND `status` = %s;

-- taken
SELECT 1 FROM `batchactions_batches` WHERE `id` = %s AND `version` = %s AND `workerId` = %s AND `claimedAt` = %s AND `status` = %s;

-- renew
UPDATE `batchactions_batches` SET `claimedAt` = CASE WHEN `claimedAt` >= %s THEN `claimedAt` + 1 ELSE %s END WHERE `id` = %s AND `jobId` = %s AND `workerId` = %s AND `version` = %s AND `status` = %s AND NOT EXISTS (SELECT 1 FROM `batchactions_jobs` WHERE `batchactions_jobs`.`id` = %s AND `batchactions_jobs`.`status` = 'ABORTED');

-- release
UPDATE `batchactions_batches` SET `status` = 'PENDING', `workerId` = NULL, `claimedAt` = NULL, `version` = `version` + 1 WHERE `id` = %s AND `jobId` = %s AND `workerId` = %s AND `status` = %s;

-- release_fenced
UPDATE `batchactions_batches` SET `status` = 'PENDING', `workerId` = NULL, `claimedAt` = NULL, `version` = `version` + 1 WHERE `id` = %s AND `jobId` = %s AND `workerId` = %s AND `status` = %s AND `version` = %s;

-- reclaim
UPDATE `batchactions_batches` SET `status` = 'PENDING', `workerId` = NULL, `claimedAt` = NULL, `version` = `version` + 1 WHERE `jobId` = %s AND `status` = %s AND (`claimedAt` < %s OR `claimedAt` IS NULL);

-- finish
UPDATE `batchactions_batches` SET `status` = %s, `processedCount` = %s, `failedCount` = %s, `version` = `version` + 1 WHERE `id` = %s AND `jobId` = %s AND `workerId` = %s AND `version` = %s AND `status` = %s;

-- finished
SELECT 1 FROM `batchactions_batches` WHERE `id` = %s AND `jobId` = %s AND `workerId` = %s AND `version` = %s AND `status` = %s;

-- unfinished
SELECT 1 FROM `batchactions_batches` WHERE `jobId` = %s AND `status` NOT IN ('COMPLETED', 'FAILED') LIMIT 1;

-- finalize
UPDATE `batchactions_jobs` SET `status` = CASE WHEN EXISTS (SELECT 1 FROM `batchactions_batches` WHERE `batchactions_batches`.`jobId` = %s AND `batchactions_batches`.`status` = 'FAILED') THEN 'FAILED' ELSE 'COMPLETED' END, `completedAt` = %s WHERE `id` = %s AND `status` = %s AND EXISTS (SELECT 1 FROM `batchactions_batches` WHERE `batchactions_batches`.`jobId` = %s) AND NOT EXISTS (SELECT 1 FROM `batchactions_batches` WHERE `batchactions_batches`.`jobId` = %s AND `batchactions_batches`.`status` NOT IN ('COMPLETED', 'FAILED'));

-- finalized
SELECT 1 FROM `batchactions_jobs` WHERE `id` = %s AND `status` IN ('COMPLETED', 'FAILED') AND `completedAt` = %s;

-- pause
UPDATE `batchactions_jobs` SET `status` = 'PAUSED' WHERE `id` = %s AND `status` = 'PROCESSING';

-- resume
UPDATE `batchactions_jobs` SET `status` = 'PROCESSING' WHERE `id` = %s AND `status` = 'PAUSED';

-- abort
UPDATE `batchactions_jobs` SET `status` = 'ABORTED', `completedAt` = %s WHERE `id` = %s AND `status` IN ('CREATED', 'PROCESSING', 'PAUSED');

-- activate
UPDATE `batchactions_jobs` SET `status` = %s, `batches` = %s, `totalRecords` = %s, `startedAt` = %s, `completedAt` = %s, `distributed` = %s WHERE `id` = %s AND `status` = 'CREATED';

