package dev.directmem;

/** Child-JVM helper: prints the limit directmem chose (and Runtime.maxMemory() when asked). */
public class PrintLimit {
    public static void main(String[] args) {
        System.out.println(DirectMemory.limit() + (args.length > 0 ? " " + Runtime.getRuntime().maxMemory() : ""));
    }
}
