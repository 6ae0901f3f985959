package dev.directmem;

/**
 * A snapshot of the library's counters: the fields of {@code dm_stats}, shared with C code in the same
 * process (every Java buffer is one block there, charged its exact capacity), plus
 * {@code reclaimedByGc}, the buffers the garbage collector freed without an explicit
 * {@link DirectMemory#free}. {@code liveCleaners} and {@code cleanersRun} count the library's cleaners
 * ({@code dm_cleaner_register}); a Java buffer's release is Java's own and not among them.
 * {@code occupied} is what the live blocks take from the system (their capacity rounded up to slots,
 * heap chunks and pages); {@code cached}, memory kept for reuse that no block uses (the pages of empty
 * slabs: the library's for a short while, and those each thread keeps back or allocates from, until
 * the thread has sat still, allocating and freeing nothing, for about a second, or ends).
 * Neither is limited. Exact when no thread allocates or frees while it is taken.
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
        long occupied,
        long cached,
        long reclaimedByGc) {

    static DirectMemoryStats of(StatsFields f, long reclaimedByGc) {
        return new DirectMemoryStats(f.limit, f.reserved, f.capacity, f.count, f.peakReserved, f.totalAllocations,
                f.liveCleaners, f.cleanersRun, f.reclaimRequests, f.limitFailures, f.occupied, f.cached, reclaimedByGc);
    }
}
