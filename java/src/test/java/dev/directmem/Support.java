package dev.directmem;

import java.io.File;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

/** Helpers shared by the tests: waiting for the GC's Cleaner, and running child JVMs. */
final class Support {
    private Support() {}

    /** GCs until the condition holds; false after ~20 s. */
    static boolean gcUntil(BooleanSupplier condition) throws InterruptedException {
        for (int i = 0; i < 400; i++) {
            if (condition.getAsBoolean()) return true;
            System.gc();
            Thread.sleep(50);
        }
        return condition.getAsBoolean();
    }

    /**
     * Every buffer dropped by earlier tests reclaimed: nothing of ours is live, and the library's
     * count, capacity and reserved are exactly 0; no release was ever refused by the library.
     */
    static void settle() throws InterruptedException {
        DirectMemory.setLimit(1L << 40);
        if (!gcUntil(() -> DirectMemory.stats().count() == 0 && DirectMemory.liveBlocks() == 0)) {
            throw new AssertionError("buffers still live after GC: " + DirectMemory.stats());
        }
        assertExactlyEmpty();
    }

    /** count, capacity and reserved are 0, as C sees them too, and no release failed. */
    static void assertExactlyEmpty() {
        DirectMemoryStats s = DirectMemory.stats();
        if (s.count() != 0 || s.capacity() != 0 || s.reserved() != 0 || Block.FAILED_RELEASES.sum() != 0) {
            throw new AssertionError("not empty: " + s + ", failed releases " + Block.FAILED_RELEASES.sum());
        }
    }

    /** Collections so far, by every collector of this JVM. */
    static long gcCount() {
        long count = 0;
        for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
            count += Math.max(0, gc.getCollectionCount());
        }
        return count;
    }

    /** {@code Executors.newVirtualThreadPerTaskExecutor()} (JDK 21+), reached by reflection: the tests compile for 17. */
    static ExecutorService virtualThreadExecutor() throws ReflectiveOperationException {
        return (ExecutorService) Executors.class.getMethod("newVirtualThreadPerTaskExecutor").invoke(null);
    }

    record Outcome(int exit, String output) {}

    /** Runs a main class in a fresh JVM with the API jar, the examples and the test classes on its class path. */
    static Outcome java(List<String> jvmArgs, String mainClass, String... args) throws Exception {
        return java(Map.of(), jvmArgs, mainClass, args);
    }

    /** As above, with {@code env} added to the child's environment. */
    static Outcome java(Map<String, String> env, List<String> jvmArgs, String mainClass, String... args) throws Exception {
        List<String> cmd = new ArrayList<>();
        cmd.add(System.getProperty("java.home") + File.separator + "bin" + File.separator + "java");
        cmd.add("-Xmx256m");
        cmd.add("-Djava.library.path=" + System.getProperty("directmem.test.libdir"));
        if (Runtime.version().feature() >= 22 && jvmArgs.stream().noneMatch(a -> a.contains("native-access"))) {
            cmd.add("--enable-native-access=ALL-UNNAMED"); // as the README says to run on JDK 22+
        }
        cmd.addAll(jvmArgs);
        cmd.add("-cp");
        cmd.add(System.getProperty("directmem.test.jar") + File.pathSeparator + System.getProperty("directmem.test.examples")
                + File.pathSeparator + System.getProperty("directmem.test.classes"));
        cmd.add(mainClass);
        cmd.addAll(List.of(args));
        ProcessBuilder builder = new ProcessBuilder(cmd).redirectErrorStream(true);
        builder.environment().putAll(env);
        Process p = builder.start();
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("child JVM did not exit within 120 s: " + cmd);
        }
        return new Outcome(p.exitValue(), new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8));
    }
}
