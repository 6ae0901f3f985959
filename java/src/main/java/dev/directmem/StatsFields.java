package dev.directmem;

/**
 * The library's counters as the JNI side writes them: each field by its name in the library's one
 * list ({@code Stats::fields} in src/manager.rs), never by position. A field missing here fails the
 * write with {@code NoSuchFieldError}; a field here that the library does not write stays -1, which a
 * test checks.
 */
final class StatsFields {
    long limit = -1;
    long reserved = -1;
    long capacity = -1;
    long count = -1;
    long peakReserved = -1;
    long totalAllocations = -1;
    long liveCleaners = -1;
    long cleanersRun = -1;
    long reclaimRequests = -1;
    long limitFailures = -1;
    long occupied = -1;
    long cached = -1;

    static StatsFields read() {
        StatsFields fields = new StatsFields();
        Native.statsInto0(fields);
        return fields;
    }
}
