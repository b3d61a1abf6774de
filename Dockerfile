# immich-auto-uploader in a container, for a NAS or a server that runs Immich in Docker.
# See "Run it in Docker" in README.md; deploy/compose.yaml shows the folders to give it.

# Build: the TypeScript compiler and the other development packages stay in this stage.
FROM node:24-bookworm-slim AS build
# To compile SQLite's binding where no prebuilt one is published for the machine.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Run: the built program and the packages it needs, as the unprivileged user `node` (uid 1000).
FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    WATCH_DIRECTORIES=/watch \
    ARCHIVE_DIRECTORY=/archive \
    STATE_DIRECTORY=/state
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# A new named volume at /state takes this folder's owner and mode: open to every user (as /tmp
# is), so that the one compose's `user:` names (the owner of the host's folders: 1026 on a
# Synology, say) can write the journal. The uploader makes its own files private to that user.
RUN mkdir -p /watch /archive /state && chown node:node /watch /archive /state && chmod 1777 /state
USER node
# The journal: keep it in a volume, or every file is read again after the container is made anew.
VOLUME ["/state"]
# `docker ps` shows the container `unhealthy` when the uploader has been kept from its work for
# over 5 minutes (Immich not answering, failing every upload, or the archive's disk away): the
# grace is in `health` itself, so one failed check is enough.
HEALTHCHECK --interval=2m --timeout=30s --start-period=1m --retries=1 CMD ["node", "dist/cli.js", "health"]
# The flag keeps Node 24 from growing a young heap of 64 MB per half (see README.md).
CMD ["node", "--max-semi-space-size=16", "dist/cli.js", "watch"]
