package dev.directmem;

import java.nio.ByteBuffer;
import java.util.function.Consumer;

/**
 * For the {@code ffm} way of {@link Buffers}: the cleanup action of a buffer's own memory session, which
 * never runs (the session is never closed) but holds the buffer, so that the session keeps the buffer
 * reachable. {@code MemorySegment.ofBuffer(b)} gives a segment that holds only the session of the segment
 * {@code b} was made from, not {@code b} itself: with the global session it held nothing, and the block was
 * freed under a segment of a buffer (or of any slice or view of it) that was still in use.
 */
final class KeepsBuffer implements Consumer<Object> {
    ByteBuffer buffer;

    @Override
    public void accept(Object segment) {
        // The session is never closed: nothing to do, and nothing is ever done.
    }
}
