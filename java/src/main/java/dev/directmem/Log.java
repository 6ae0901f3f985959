package dev.directmem;

/**
 * The library's one logger, {@code dev.directmem}, made on first use: a JVM in which directmem never
 * has anything to say never starts the logging system ({@code System.getLogger} brings up
 * {@code java.util.logging}, some 30 classes, at once).
 */
final class Log {
    private Log() {}

    private static final class Holder {
        static final System.Logger LOGGER = System.getLogger("dev.directmem");
    }

    static void log(System.Logger.Level level, String message) {
        Holder.LOGGER.log(level, message);
    }

    static void log(System.Logger.Level level, String message, Throwable thrown) {
        Holder.LOGGER.log(level, message, thrown);
    }
}
