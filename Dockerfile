# meshlane node agent image. Built from the repository root:
#   docker build -t meshlane:0.1.0 .
# No registry or engine is reachable from the machines meshlane is tested on, so
# test/kernel/image.test.ts checks what can be checked without one: every COPY source exists after the
# README's build, the runtime stage's files (laid out as below, nothing else) run an agent that captures,
# and the entry command starts it.

# ---- build: the BPF objects (clang), the static CNI plugin (gcc), the addon (g++, libbpf-dev), the
# TypeScript of src/ only (tsconfig.build.json: no test or bench code), then the dev dependencies pruned
FROM node:20-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ gcc libc6-dev binutils python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bpf ./bpf
COPY cni ./cni
COPY native ./native
COPY src ./src
COPY scripts/bundle-client-node.mjs ./scripts/
# the image's own node headers (no download); the same steps as scripts/setup.sh
RUN make -C cni all check \
 && make -C bpf \
 && npx --no-install node-gyp rebuild --directory native --nodedir=/usr/local \
 && npx --no-install tsc -p tsconfig.build.json \
 && node scripts/bundle-client-node.mjs \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: node and libbpf (the one shared library the addon needs beyond node's own), and the built
# files the agent loads: the CLI, the addon, the BPF objects, the CNI plugin that `meshlane cni install`
# copies to the node, the production node_modules
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libbpf1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/meshlane
# src/cli/node-options.ts says why (a small young generation, two malloc arenas: RSS of a small daemon)
ENV NODE_OPTIONS=--max-semi-space-size=1 MALLOC_ARENA_MAX=2
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/native/build/Release/meshlane.node ./native/build/Release/meshlane.node
COPY --from=build /src/bpf/build ./bpf/build
COPY --from=build /src/cni/build/meshlane-cni ./cni/build/meshlane-cni
ENTRYPOINT ["node", "/opt/meshlane/dist/src/cli/main.js"]
CMD ["agent"]
