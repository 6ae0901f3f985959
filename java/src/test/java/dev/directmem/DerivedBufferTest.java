package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.lang.ref.WeakReference;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * A buffer derived from one of ours (slice, duplicate, view, chains of them) keeps it reachable, at
 * every size, whichever way the buffer was made; once the derived buffer is gone the block is freed.
 */
class DerivedBufferTest extends SettledTest {
    @Test
    void derivedBuffersKeepTheirDataAfterTheRootIsDropped() throws Exception {
        assertEquals(List.of(), DerivedBuffers.check(), "made by " + Buffers.KIND);
    }

    @Test
    void theIssueSnippetKeepsItsData() throws Exception {
        java.nio.IntBuffer v = DirectMemory.allocate(16384).asIntBuffer(); // only the view is kept
        for (int i = 0; i < v.capacity(); i++) v.put(i, 0x11111111);
        for (int r = 0; r < 5; r++) { System.gc(); Thread.sleep(100); }
        ByteBuffer other = DirectMemory.allocate(16384);
        for (int i = 0; i < other.capacity(); i++) other.put(i, (byte) 0x7f);
        assertEquals(0, DerivedBuffers.lost(v));
        assertEquals(2, DirectMemory.stats().count(), "the view's root is still live");
        DirectMemory.free(other);
    }

    @Test
    void theBlockIsFreedOnceTheLastDerivedBufferIsUnreachable() throws Exception {
        Buffer view = DerivedBuffers.derivedOfDroppedRoot(4096, b -> b.slice().asLongBuffer());
        for (int r = 0; r < 3; r++) { System.gc(); Thread.sleep(50); } // GCs cannot free it while the view lives
        assertEquals(1, DirectMemory.stats().count());
        WeakReference<Buffer> gone = new WeakReference<>(view);
        view = null;
        assertTrue(Support.gcUntil(() -> gone.get() == null && DirectMemory.stats().count() == 0), DirectMemory.stats().toString());
        Support.assertExactlyEmpty();
    }

    @Test
    void everyWayOfMakingBuffersKeepsDerivedBuffersSafeInAChildJvm() throws Exception {
        boolean ffmHere = Runtime.version().feature() >= 22;
        for (String kind : new String[] {"ffm", "constructor", "unsafe", "jni"}) {
            Support.Outcome o = Support.java(List.of("-Ddirectmem.buffers=" + kind, "--add-opens", "java.base/java.nio=ALL-UNNAMED",
                    "--enable-native-access=ALL-UNNAMED"), "dev.directmem.DerivedBuffers");
            assertEquals(0, o.exit(), o.output());
            assertTrue(o.output().contains("0 derived buffers lost their data"), o.output());
            String expected = kind.equals("ffm") && !ffmHere ? "unsafe" : kind.equals("unsafe") && ffmHere ? "jni" : kind;
            assertTrue(o.output().contains("buffers made by " + expected), kind + ": " + o.output());
        }
    }

    /**
     * On JDK 22+ the {@code ffm} way runs as plain calls from the jar's release-22 part
     * ({@code META-INF/versions/22}); a JVM that does not read multi-release jars falls back to the
     * same calls composed from method handles, and its derived buffers are as safe.
     */
    @Test
    void onJdk22TheFfmWayIsThePlainCallsOfTheJarsRelease22PartOrElseItsFallback() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(Runtime.version().feature() >= 22, "FFM needs JDK 22+");
        assertEquals("ffm", Buffers.KIND);
        assertTrue(Buffers.FFM_PLAIN_CALLS, "the jar's JDK 22 part (FfmBuffers) is not in use");
        Support.Outcome o = Support.java(List.of("-Djdk.util.jar.enableMultiRelease=false", "--enable-native-access=ALL-UNNAMED"),
                "dev.directmem.DerivedBuffers");
        assertEquals(0, o.exit(), o.output());
        assertTrue(o.output().contains("0 derived buffers lost their data"), o.output());
        assertTrue(o.output().contains("buffers made by ffm") && !o.output().contains("(plain calls)"), o.output());
    }
}
