/**
 * directmem: off-heap {@link java.nio.ByteBuffer}s allocated, limited and tracked by libdirectmem,
 * which the jar carries for its platforms. Loading a JNI library needs native access on JDK 24+:
 * {@code --enable-native-access=dev.directmem} on the module path.
 */
module dev.directmem {
    requires java.management;
    requires jdk.management;

    exports dev.directmem;
}
