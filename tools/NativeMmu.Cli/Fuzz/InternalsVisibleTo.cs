using System.Runtime.CompilerServices;

// The tests plug deliberately broken subjects into the fuzzer to prove it reports them.
[assembly: InternalsVisibleTo("NativeMmu.Tests")]
