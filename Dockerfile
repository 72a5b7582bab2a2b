# meshlane node agent image (first cut; the DaemonSet in deploy/ runs it privileged on every node).
# Build stage: BPF objects (clang), the addon (libbpf-dev), the TypeScript.
FROM node:20-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config make g++ python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY bpf ./bpf
COPY native ./native
COPY src ./src
COPY test ./test
RUN make -C bpf \
 && npx node-gyp rebuild --directory native \
 && npx tsc -p tsconfig.json \
 && npm prune --omit=dev

# Run stage: node, libbpf and the built artefacts only.
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libbpf1 libelf1 zlib1g \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/meshlane
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/bpf/build ./bpf/build
COPY --from=build /src/native/build/Release/meshlane.node ./native/build/Release/meshlane.node
COPY --from=build /src/dist/src ./dist/src
ENTRYPOINT ["node", "/opt/meshlane/dist/src/cli/main.js"]
CMD ["agent", "--help"]
