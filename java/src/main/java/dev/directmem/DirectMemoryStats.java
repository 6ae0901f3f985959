package dev.directmem;

/**
 * A snapshot of the library's counters: the fields of {@code dm_stats}, shared with C code in the same
 * process, plus {@code reclaimedByGc}, the buffers the garbage collector freed without an explicit
 * {@link DirectMemory#free}.
 *
 * <p>Java's small buffers live in slabs, which the library counts as blocks. Here each slab is replaced
 * by the buffers in it: {@code count}, {@code capacity}, {@code totalAllocations}, {@code liveCleaners}
 * and {@code cleanersRun} count buffers; {@code reserved} and {@code peakReserved} count the memory
 * taken, whole slabs included. Exact when no thread allocates or frees while it is taken.
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

    static DirectMemoryStats of(long[] s, Slabs.Usage slabs, long reclaimedByGc) {
        long capacity = s[2] - slabs.slabBytes() + slabs.bufferCapacity();
        long count = s[3] - slabs.slabs() + slabs.buffers();
        long totalAllocations = s[5] - slabs.slabsTaken() + slabs.buffersTaken();
        long liveCleaners = s[6] - slabs.slabs() + slabs.buffers();
        long cleanersRun = s[7] - slabs.slabsReleased() + slabs.buffersReleased();
        return new DirectMemoryStats(s[0], s[1], capacity, count, s[4], totalAllocations, liveCleaners,
                cleanersRun, s[8], s[9], reclaimedByGc);
    }
}
