{
  "targets": [
    {
      "target_name": "meshlane",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/handles.cc",
        "src/object.cc",
        "src/syscalls.cc",
        "src/sockets.cc",
        "src/probe.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "_GNU_SOURCE"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "conditions": [
        ["OS=='linux'", {
          "cflags_cc+": ["<!@(pkg-config --cflags libbpf 2>/dev/null || true)"],
          "libraries": ["<!@(pkg-config --libs libbpf 2>/dev/null || echo -lbpf)", "-lelf", "-lz"]
        }]
      ]
    }
  ]
}
