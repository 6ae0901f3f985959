package dev.directmem;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.function.Consumer;

/**
 * The {@code ffm} way of {@link Buffers} as plain calls, for JDK 22+: compiled for release 22 into the
 * jar's {@code META-INF/versions/22} (a multi-release jar), so that JDK 17 to 21 never see it.
 * {@link Buffers} reaches these two methods through direct method handles. Composing the same calls
 * from method-handle combinators in release-17 code (what {@link Buffers} falls back to in a jar
 * built without a JDK 22+ compiler) made the JVM spin more classes at start (80 against 37 in a
 * small program; 1,344 classes loaded against 1,268), and every full GC walks them: 3.2-3.8 ms per
 * {@code System.gc()} against 2.5-3.3 ms this way, 1.9-2.5 ms for the JDK's own buffers.
 */
final class FfmBuffers {
    private FfmBuffers() {}

    /**
     * The buffer over the block, in a shared memory session of its own that holds it ({@link KeepsBuffer}):
     * every segment and buffer made from it (and from those) holds that session, so the buffer (which the
     * block's phantom reference watches) stays reachable as long as any of them does. The session is never
     * closed; it needs no cleaner.
     */
    @SuppressWarnings({"restricted", "unchecked"}) // the block at `address` is `capacity` bytes long: the library's own
    static ByteBuffer wrap(long address, int capacity) {
        KeepsBuffer keep = new KeepsBuffer();
        ByteBuffer buffer = MemorySegment.ofAddress(address)
                .reinterpret(capacity, Arena.ofShared(), (Consumer<MemorySegment>) (Consumer<?>) keep)
                .asByteBuffer();
        keep.buffer = buffer;
        return buffer;
    }

    /** The address of the buffer's first byte: {@code ofBuffer}'s segment starts at its position. */
    static long address(ByteBuffer buffer) {
        return MemorySegment.ofBuffer(buffer).address() - buffer.position();
    }
}
