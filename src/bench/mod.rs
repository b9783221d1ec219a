//! Load generators: `nvkv bench` and `nvkv insert`.
