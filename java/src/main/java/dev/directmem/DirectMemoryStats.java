package dev.directmem;

/**
 * A snapshot of the library's counters: the fields of {@code dm_stats}, shared with C code in the same
 * process, plus {@code reclaimedByGc}, the buffers the garbage collector freed without an explicit
 * {@link DirectMemory#free}.
 */
public record DirectMemoryStats(
        long limit,
        long reserved,
        long capacity,
        long count,
        long peakReserved,
        long totalAllocations,
        long liveCleaners,
        long cleanersRun,
        long reclaimRequests,
        long limitFailures,
        long reclaimedByGc) {

    static DirectMemoryStats of(long[] s, long reclaimedByGc) {
        return new DirectMemoryStats(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], reclaimedByGc);
    }
}
