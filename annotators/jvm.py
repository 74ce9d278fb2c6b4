"""What a Spark JVM needs on Java 17: Spark 3.5 and Ray's Java workers reflect into JDK
internals that Java 17 closes unless these packages are opened to them."""

OPENED_PACKAGES = (
    "java.lang",
    "java.lang.invoke",
    "java.lang.reflect",
    "java.io",
    "java.math",
    "java.net",
    "java.nio",
    "java.text",
    "java.time",
    "java.util",
    "java.util.concurrent",
    "java.util.concurrent.atomic",
    "sun.nio.ch",
    "sun.nio.cs",
    "sun.security.action",
    "sun.util.calendar",
)
JAVA_17_OPTIONS = " ".join(
    [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in OPENED_PACKAGES]
    + ["-Djdk.reflect.useDirectMethodHandle=false"]
)
"""JVM options for every Spark JVM: driver, executors, RayDP's app master."""
