package dev.directmem;

/** Child-JVM helper: drops one buffer without freeing it and waits for the Cleaner's report. */
public class Leak {
    static void leakOne() {
        DirectMemory.allocate(1024).put(0, (byte) 1);
    }

    public static void main(String[] args) throws Exception {
        leakOne();
        if (!Support.gcUntil(() -> DirectMemory.stats().reclaimedByGc() == 1)) System.exit(2);
        System.out.println("reclaimedByGc=" + DirectMemory.stats().reclaimedByGc());
    }
}
